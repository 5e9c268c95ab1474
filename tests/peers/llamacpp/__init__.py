"""A real llama.cpp server on a hand-built, scripted model (see README.md)."""
