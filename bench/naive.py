"""The answer handler a user would write first: an S3 GET and a fresh Jinja2 compile on every request.

It is the baseline the real handler is compared against. It skips the signature check and XML
validation, which only flatters the baseline.
"""

from __future__ import annotations

import os
import urllib.parse

import boto3
import jinja2

s3 = boto3.client("s3")


def handler(event: dict, context: object) -> dict:
    params = dict(urllib.parse.parse_qsl(event.get("body") or "", keep_blank_values=True))
    params.update(event.get("queryStringParameters") or {})
    name = params.get("X-PH-Template") or "Welcome"
    obj = s3.get_object(Bucket=os.environ["TEMPLATE_BUCKET"], Key=f"templates/{name}.xml")
    template = jinja2.Template(obj["Body"].read().decode("utf-8"), autoescape=True)
    headers = {k[5:]: v for k, v in params.items() if k.startswith("X-PH-")}
    sip = {k[6:]: v for k, v in params.items() if k.startswith("SIP-H-")}
    body = template.render(headers=headers, call=params, sip=sip)
    return {"statusCode": 200, "headers": {"Content-Type": "application/xml"}, "body": body}
