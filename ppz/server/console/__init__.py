"""The web console of ppz-server (``/ui/``): sign-in with an API key, the account's sources,
pipes and presence, a pipe's messages with a live tail, and a send box."""
