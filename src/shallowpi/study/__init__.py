"""The Meta-World study and the demo: shared steps (`pipeline`) and the results writer (`report`)."""
