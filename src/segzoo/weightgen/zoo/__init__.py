"""The checkpoint zoo: which runs a configuration asks for, the zoo network, the engine that trains many runs at
once, the run files and their index, scoring on fixed patches and whole volumes, and the channel symmetry."""
