"""Stand-in HTTP receivers for the API connectors (Datadog, Splunk HEC, New Relic,
Elasticsearch _bulk, a generic webhook): real servers on free ports that accept exactly
the documented request formats, record what they receive and inject faults.

Use them through the pytest fixtures in :mod:`tests.receivers.fixtures`.
"""
