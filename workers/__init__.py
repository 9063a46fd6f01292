"""What runs inside job children: job types, their context, and their domain.

This package never imports the web layer (``supervisor``); the supervisor
imports the registry from here.
"""
