"""A CallbackRecorder wired to fakes, and the callback keyring its tokens use."""
from functools import partial

from stillhouse.runpod.callback_urls import Keyring, verify_callback_token
from stillhouse.runpod.callbacks import CallbackRecorder

SECRET = Keyring.single("k")


def recorder(store, status_answers=None, **parts):
    notified, fetched = [], []

    def fetch(endpoint, runpod_id):
        fetched.append((endpoint, runpod_id))
        return status_answers[runpod_id]

    rec = CallbackRecorder(store=store, verify_token=partial(verify_callback_token, SECRET), fetch_status=fetch, notify=notified.append, **parts)
    return rec, notified, fetched
