"""tinygrad's runtime, extended: device choice, the CPU graph that replays jitted steps from C,
the program cache, resident memory, and data-parallel sharding. Imports only the model layer."""
