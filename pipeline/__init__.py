"""The stream-processing pipeline: event contract, topics and the Faust worker."""
