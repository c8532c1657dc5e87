"""The detection path: detector (opinions), fusion, responder (verdicts and alerts), and the
function that composes a monitor from its config."""
