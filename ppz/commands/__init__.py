"""What each ``ppz`` command does, one module per command group (``ppz.cli`` is the surface).

``client`` holds what every command shares (session id, one IPC call, errors, output, flag
values); ``fireglue`` holds everything that touches Python Fire. A command's module is imported
only when that command runs.
"""
