"""Training and probing the synthetic world's small SAN: recipe, step, loop, command line."""
