"""A short way through the middleware for the callback API.

Every downstream job posts its callbacks to `/api/oot/results`, so that view's
fixed costs add up. Sessions, authentication, messages, CSRF (the view is
exempt), static files and URL resolving do nothing for it. This middleware
sits after the ones whose headers every response needs (security headers,
X-Frame-Options, Content-Security-Policy and Server-Timing) and calls the view
itself, skipping the rest.
"""

from django.urls import reverse

from oot_ingest import views


class CallbackApiMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        # Taken from the URLconf, so the route is named in one place only.
        self.path = reverse(views.results)

    def __call__(self, request):
        if request.path_info != self.path:
            return self.get_response(request)
        # CommonMiddleware checks the Host header against ALLOWED_HOSTS for
        # every other request; get_host raises DisallowedHost, a 400.
        request.get_host()
        response = views.results(request)
        # Also CommonMiddleware's job elsewhere: a WSGI server would otherwise
        # frame the body with chunked encoding.
        response.headers.setdefault("Content-Length", str(len(response.content)))
        return response
