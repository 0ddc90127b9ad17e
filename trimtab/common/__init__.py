"""Helpers written once for every trimtab package; they import nothing else of trimtab's.

Pure (the controller core may import them): ``errors``, ``poisson``, ``series``.
I/O (the shell, the CLIs, the demo, the benchmarks and the tests): ``ports``, ``process``,
``prometheus``, ``generated`` (the ``build [--check]`` command of alerts and dashboards).
"""
