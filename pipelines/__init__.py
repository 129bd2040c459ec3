"""Pipeline stages: read inputs, validate, call ``hrm``, write atomically, validate."""
