"""What the operator, the builder's Jobs and the serving runtime agree on: step results, tree
presets, the toolchain pin and checkpoint layouts. Standard library only."""
