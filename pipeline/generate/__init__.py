"""The generation job (Beam): see graph.build for the graph."""
