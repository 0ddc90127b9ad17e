"""The controllers' commands: ``trimtab controller`` and ``trimtab forecast eval``."""
