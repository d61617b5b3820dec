"""The Backend contract suite, run against every backend kind."""
