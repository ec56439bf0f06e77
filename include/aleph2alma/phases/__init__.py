"""Phase steps: one function per DAG task, clients injected."""
