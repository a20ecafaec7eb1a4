"""spot-batch processing library: everything the flows do, with no Metaflow import.

The flows in ``flows/`` are thin executors; this package is the work. It is importable and
testable on its own.
"""

# Metaflow packages only the flow's own directory by default. This module attribute makes it add
# this sibling package (and its data files) to the code package that runs on Batch/Kubernetes.
METAFLOW_PACKAGE_POLICY = "include"
