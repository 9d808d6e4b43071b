"""Tools outside the runtime API: demo data generators and the fuzzing harness. The pipeline never imports these."""
