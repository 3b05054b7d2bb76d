"""Tests of the reference-value formats (cvmlaunch/publish/)."""
