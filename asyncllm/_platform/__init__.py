"""What lies beyond chat: files, vendor batch jobs, fine-tuning, audio and moderation.

The shared pieces (upload sources, the file and batch types, pagination, the uniform batch helper
with its state file) are written once here; each vendor's module says only its wire format. Every
call goes through the client's dispatcher with the shared call options, errors and request IDs.
"""
