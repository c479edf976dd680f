"""One benchmark spread over a Ray cluster (`servingbench run SCENARIO --ray ADDRESS`).

Ray does the distributing; this package only says what to place where and brings the
results home:

- connect.py: join the cluster (loopback stays loopback) and list its nodes;
- placement.py: what a target asks of a node (its CPUs, GPUs of a type, one
  `servingbench_node` slot so no two targets share a node's measured CPUs) and whether any
  node has it;
- relay.py: on the node, the target runs as it would locally (harness/runner.py) and every
  write to its run folder and every progress event streams back as it happens;
- driver.py: on the machine that started the run, one run folder and one report; a lost
  node fails its target with the reason and the run goes on;
- load.py: one target's load processes dealt over several nodes, on one clock.
"""
