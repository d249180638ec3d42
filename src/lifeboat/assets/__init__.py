"""One module (or package) per data class: capture, restore and verify.

Assets talk to the repository (`lifeboat.repo`) only; they never touch storage.
"""
