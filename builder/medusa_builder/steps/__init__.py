"""The builder steps, one module each (see medusa_builder.cli)."""
