"""Hypercorn settings for production (`hypercorn -c python:voice_app.hypercorn_conf`).

graceful_timeout is raised from Hypercorn's 3 s so a deploy lets live calls finish: on SIGTERM
the app stops taking calls and says goodbye to the rest before this runs out.
"""

import os

bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"]  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
graceful_timeout = float(os.environ.get("SHUTDOWN_GRACE_SECONDS", "60")) + 10
keep_alive_timeout = 75  # above common load balancers' 60 s idle timeout
websocket_ping_interval = 20  # notice dead Media Streams peers
websocket_max_message_size = 64 * 1024  # the codec's own limit; Twilio's messages are ~300 B
accesslog = "-"
errorlog = "-"
