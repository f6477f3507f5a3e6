"""Graph IR (stage 2): a static-shaped dataflow graph and the passes over it."""
