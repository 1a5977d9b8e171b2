"""Use cases: each runs inside one unit of work (one transaction) given by the caller."""
