"""edgedeploy: trained network -> verified, measured deployment bundle for Jetson boards and GPUs."""

__version__ = "0.1.0"
