"""dispatch-matrix: a persistent Claude agent on your computer, commanded over Matrix E2EE."""

__version__ = "0.1.0"
