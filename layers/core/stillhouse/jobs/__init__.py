"""Jobs: the model, the one table of status moves, the DynamoDB store, the queue, and what happens to a job
(submit, dispatch, sweep, stream).
"""
