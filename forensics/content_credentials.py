"""Files that carry each provenance signal (C2PA signed with a throwaway certificate, tampered, XMP, EXIF, PNG chunks): for the demo archive and the tests."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
from PIL import Image, PngImagePlugin

from forensics.provenance import IPTC_SOURCE_TYPE_PREFIX



def throwaway_signing_chain():
    """An ES256 leaf certificate (document signing) issued by a fresh test root; returns (private key, PEM chain)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forgescan test root"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forgescan tests")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forgescan test signer"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forgescan tests")]))
            .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + root.public_bytes(serialization.Encoding.PEM)
    return key, chain.decode()


def sign_with_c2pa(image_bytes: bytes, mime: str, source_type: str, generator: str = "forgescan-test-generator") -> bytes:
    """Embed a C2PA manifest (one `c2pa.created` action with an IPTC digital source type) signed by a throwaway chain."""
    import c2pa
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key, chain = throwaway_signing_chain()
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "format": mime,
        "title": "forgescan test image",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": IPTC_SOURCE_TYPE_PREFIX + source_type}]}}],
    }
    with c2pa.Signer.from_callback(lambda data: key.sign(data, ec.ECDSA(hashes.SHA256())),
                                   c2pa.C2paSigningAlg.ES256, chain, None) as signer, c2pa.Builder(manifest) as builder:
        destination = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(image_bytes), destination)
    return destination.getvalue()


def tamper_pixels(jpeg: bytes) -> bytes:
    """Change bytes inside the compressed image data after signing (the data hash must then fail)."""
    edited = bytearray(jpeg)
    for offset in (-300, -200, -120):
        edited[offset] ^= 0x5A
    return bytes(edited)


def picture(seed: int = 0, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A smooth picture with structure (PDQ needs more than noise): gradients plus a few shapes."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([
        128 + 100 * np.sin(x / (7 + 5 * rng.random()) + rng.random() * 6),
        128 + 100 * np.cos(y / (9 + 5 * rng.random()) + rng.random() * 6),
        128 + 100 * np.sin((x + y) / (11 + 5 * rng.random())),
    ], axis=-1)
    for _ in range(4):
        top, left = rng.integers(0, height - 20), rng.integers(0, width - 20)
        image[top:top + rng.integers(10, 30), left:left + rng.integers(10, 40)] = rng.integers(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(array: np.ndarray, quality: int = 90, **save_options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality, **save_options)
    return buffer.getvalue()


def png(array: np.ndarray, texts: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (texts or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def xmp_packet(source_type: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'Iptc4xmpExt:DigitalSourceType="{IPTC_SOURCE_TYPE_PREFIX}{source_type}"/></rdf:RDF></x:xmpmeta>'
    ).encode()


A1111_PARAMETERS = ("a lighthouse at dusk, oil painting\nNegative prompt: blurry\n"
                    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
                    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0")
COMFYUI_PROMPT = json.dumps({
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
})


def exif_with(software: str | None = None, make: str | None = None, model: str | None = None,
              user_comment: str | None = None) -> bytes:
    exif = Image.Exif()
    for tag, value in ((0x0131, software), (0x010F, make), (0x0110, model)):
        if value is not None:
            exif[tag] = value
    if user_comment is not None:
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + user_comment.encode("utf-16-be")
    return exif.tobytes()
