"""Browser tests of the web console: Debian's Chromium driven by Playwright, real server."""
