"""``first_line``: what the one-sentence messages quote of an underlying error."""

from hokusai_mlflow_plugin.core.errors import first_line


def test_first_line_of_an_exception_or_its_text():
    assert first_line(ValueError("\n  bad value\nsecond line")) == "bad value"
    assert first_line("x" * 500, limit=200) == "x" * 200
    assert first_line(ValueError("")) == "ValueError"  # nothing said: its type
    assert first_line(ValueError(""), default="") == ""
    assert first_line("", "no reason given") == "no reason given"
    assert first_line(None) == ""
