"""Jobs: long work that survives proxies, disconnects and restarts (CONTRACT section 6).

- api.py: `Prefer: respond-async` on the image routes (validated as the synchronous request, then
  202) and the job resource under /v1/jobs/{id}: JSON, result, events (SSE), cancel, delete.
- model.py: the job record and its JSON.
- store.py: the store interface (small enough for a Redis implementation) and `open_store`;
  sqlite.py: the embedded store (JOBS_STORE=sqlite:///PATH); redis_store.py: the shared one for
  several gateway replicas (JOBS_STORE=redis://...).
- files.py: uploads and results as files (RESULTS_STORE=file:///DIR); s3_files.py: as objects
  in an S3-compatible bucket (RESULTS_STORE=s3://BUCKET/PREFIX), for several replicas.
- runner.py: pulls queued jobs from the store and runs them, a bounded number at a time, through
  the same operations as the synchronous routes (operations.py), with leases so that a job whose
  gateway died is run again (at least once).
- webhooks.py: `?webhook=URL`: the job JSON POSTed when it ends, signed as Standard Webhooks do,
  retried, and only where the SSRF rules allow (checked at submission and before each attempt).
- tracker.py: a job's progress {done, total, stage} from its steps and its predictor calls.
- service.py: starts and stops all of it with the gateway (the app's lifespan).
"""
