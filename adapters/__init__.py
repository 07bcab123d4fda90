"""Framework adapters, one package each, registered in the ``layerdiff.adapters`` entry-point group."""
