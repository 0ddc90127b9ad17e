"""trimtab: observability and autoscaling control loop for ML inference fleets.

The root package is mapped onto the repository's top-level folders (pyproject's
``package-dir``): ``trimtab.collectors`` is ``collectors/``, ``trimtab.controllers`` is
``controllers/``, and so on. ``trimtab.cli`` is the composition root; ``trimtab.up`` runs the
whole loop live on one machine.
"""
__version__ = "0.1.0"
