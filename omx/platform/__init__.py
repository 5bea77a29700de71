"""The remote platform's local worker: ``omx worker`` and ``omx auth``.

A hosted planning platform queues agent sessions for a user's private worker; this package claims
them one at a time and runs them with the same engine as the file team (:mod:`omx.engine`).

Modules, top down: :mod:`~omx.platform.service` assembles a worker (:mod:`~omx.platform.source`, the
work source, over :mod:`~omx.platform.client`, the only module that knows the platform's paths);
:mod:`~omx.platform.auth` logs in (OAuth device flow) and keeps the tokens; :mod:`~omx.platform.config`
holds the local settings; :mod:`~omx.platform.manage`, :mod:`~omx.platform.daemon` and
:mod:`~omx.platform.doctor` back the commands. The wire contract is ``docs/platform-protocol.md``.
Nothing here is imported when unrelated ``omx`` commands start.
"""
