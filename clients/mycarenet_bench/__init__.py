"""mycarenet-bench: latency and availability of the mesh under load and faults."""
