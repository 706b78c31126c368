"""pytest plugin of the conformance suite; inert until ``--backend`` is given."""
