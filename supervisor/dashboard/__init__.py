"""The dashboard's static files: index.html, app.js, style.css (served by supervisor.api.dashboard).

No build step and nothing fetched from another host: the page is these three
files and the API's own routes.
"""
