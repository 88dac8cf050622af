"""The inference engine: a Llama-family model with Medusa heads and tree decoding (torch)."""
