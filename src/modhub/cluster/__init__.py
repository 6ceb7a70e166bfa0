"""The cluster: nodes sharing one database, the secret key they must share, and how code
and changes reach every node (docs/cluster.md)."""
