#!/bin/bash
# Started by the AWS Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): the layer's packages are in
# /opt/python, this function's code in $LAMBDA_TASK_ROOT.
PYTHONPATH="$PYTHONPATH:/opt/python:$LAMBDA_TASK_ROOT" exec python3 "$LAMBDA_TASK_ROOT/app.py"
