"""Bank reconciliation: the payout provider's settlement files against the ledger's cash-outs.

`files` reads the files (services/payout_rail/settlement_file.py is their format), `ledger_side`
reads what the ledger booked, `matching` classifies each cash-out (no I/O), `store` keeps each
reconciliation append-only, and `service.reconcile` runs them in that order.
"""
