"""torch.fx passes that turn a traced ANN into the graph a SpikingNetwork simulates.

Each pass does one thing, can be run and tested alone, and logs what it changed.
"""
