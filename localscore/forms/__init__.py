"""Where records come from and where results go: the record shapes, one reader per input form, one writer per output
form, and the one durable-write path every file goes through."""
