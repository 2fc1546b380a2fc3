"""[DNI]'s claims: their rules (rules.py) and the replication report that applies them (render.py)."""
