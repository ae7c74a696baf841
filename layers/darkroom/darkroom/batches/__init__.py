"""The batch tier: jobs sent through OpenAI's Batch API at half the token price, finished within a day.

A job with `tier: "batch"` is accepted as `batch_queued` in its model's and endpoint's batch queue (a sparse index of
the jobs table); no worker message is sent. A scheduled batcher (darkroom.batches.batcher) takes each queue once it
holds `BatchMaxJobs` jobs or its oldest has waited `BatchMaxWaitSeconds`: it writes a batch record, claims each job by
a conditional write (a job goes in one batch only, however many batchers run), uploads one JSONL file of their
requests, creates the provider's batch with darkroom's batch id in its metadata, moves the jobs to `polling`, and
starts the batch's poller execution. A batcher that dies part way leaves its record pending; a later run takes it
over once its lease has run out and carries it on from where it stopped, looking for the provider's batch by its
metadata before ever creating one, so a lost answer never makes a second batch.

The poller (darkroom.batches.follow) checks the batch with long, growing waits; once it has ended, it reads the
output and error files a line at a time, stores each line's images under its own job and ends it with its own usage
and half-price cost, and fails what the batch never ran.
"""
