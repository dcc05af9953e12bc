"""Declared provenance: what an image says about its own origin (C2PA, XMP, EXIF, generator text chunks).

These are cheap, model-free signals read from the file's bytes. A declared AI
source (an IPTC digital source type for trained algorithmic media, or the
generation parameters that Stable Diffusion web UIs, ComfyUI, InvokeAI or
NovelAI write into the file) is a verdict of its own. Unreadable metadata never
fails the object: each reader records a field-level error and the others go on.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import asdict, dataclass, field

import c2pa
from PIL import Image

IPTC_SOURCE_TYPE_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC digital source types that declare generative-AI content (the C2PA and IPTC guidance for "AI-generated").
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
MAX_XMP_BYTES = 1 << 20  # larger packets are reported as an error, not parsed
MAX_PARAMETERS_CHARS = 2000  # generation parameters kept in the row (prompts can be long)
C2PA_MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
                   "GIF": "image/gif", "AVIF": "image/avif", "HEIF": "image/heif", "BMP": "image/bmp"}
# Failure codes that say only that nobody vouches for the signer (no trust list configured), not that the file changed.
UNTRUSTED_CODES = frozenset({"signingCredential.untrusted"})

C2PA_VALID, C2PA_TRUSTED, C2PA_UNTRUSTED_SIGNER, C2PA_INVALID = "valid", "trusted", "untrusted_signer", "invalid"

EXIF_MAKE, EXIF_MODEL, EXIF_SOFTWARE, EXIF_IMAGE_DESCRIPTION = 0x010F, 0x0110, 0x0131, 0x010E
EXIF_IFD, EXIF_USER_COMMENT = 0x8769, 0x9286

# Software names that only generators write (EXIF Software / PNG Software chunks).
GENERATOR_SOFTWARE = (
    ("novelai", "NovelAI"), ("midjourney", "Midjourney"), ("dall-e", "DALL-E"), ("dall·e", "DALL-E"),
    ("stable diffusion", "Stable Diffusion"), ("firefly", "Adobe Firefly"), ("imagen", "Google Imagen"),
    ("comfyui", "ComfyUI"), ("invokeai", "InvokeAI"), ("automatic1111", "Stable Diffusion web UI"),
)
_XMP_PACKET = re.compile(rb"<x:xmpmeta[\s>].*?</x:xmpmeta>", re.DOTALL)
_XMP_SOURCE_TYPE = re.compile(
    r"""DigitalSourceType\s*=\s*["']([^"']+)["']|DigitalSourceType>\s*([^<\s]+)\s*<|DigitalSourceType[^>]*rdf:resource\s*=\s*["']([^"']+)["']""")
_A1111_MODEL = re.compile(r"(?:^|,\s*)Model:\s*([^,\n]+)")


@dataclass(frozen=True)
class Provenance:
    """What one file declares about its origin; None where the file says nothing.

    Attributes:
        c2pa_present: a C2PA manifest store is embedded.
        c2pa_validation: `trusted`, `valid`, `untrusted_signer` (intact, signer not on a trust list) or `invalid`.
        c2pa_failures: the validation failure codes of the active manifest.
        c2pa_claim_generator: name (and version) of the tool that signed the claim.
        c2pa_actions: the manifest's actions (`c2pa.created`, `c2pa.edited`, ...).
        c2pa_digital_source_type: IPTC source type of the actions (short form, e.g. `trainedAlgorithmicMedia`).
        xmp_digital_source_type: IPTC `Iptc4xmpExt:DigitalSourceType` from the XMP packet.
        exif_software, exif_make, exif_model: EXIF tags of the same names.
        generator_hint: the generator the file's own metadata names (e.g. `ComfyUI`, `Stable Diffusion web UI`).
        generation_parameters: the generation text (prompt, sampler, ...), truncated.
        declared_ai: the file declares that it is (partly) AI-generated.
        errors: field-level read errors (`c2pa: ...`, `exif: ...`, `xmp: ...`).
    """

    c2pa_present: bool = False
    c2pa_validation: str | None = None
    c2pa_failures: list[str] = field(default_factory=list)
    c2pa_claim_generator: str | None = None
    c2pa_actions: list[str] = field(default_factory=list)
    c2pa_digital_source_type: str | None = None
    xmp_digital_source_type: str | None = None
    exif_software: str | None = None
    exif_make: str | None = None
    exif_model: str | None = None
    generator_hint: str | None = None
    generation_parameters: str | None = None
    declared_ai: bool = False
    errors: list[str] = field(default_factory=list)

    def to_row(self) -> dict:
        return asdict(self)

    @property
    def reasons(self) -> list[str]:
        """Why this provenance bears on the verdict, in words."""
        reasons = []
        if self.c2pa_digital_source_type in AI_SOURCE_TYPES:
            reasons.append(f"declared AI source: C2PA digital source type {self.c2pa_digital_source_type}"
                           f" (credentials {self.c2pa_validation})")
        if self.xmp_digital_source_type in AI_SOURCE_TYPES and self.xmp_digital_source_type != self.c2pa_digital_source_type:
            reasons.append(f"declared AI source: XMP digital source type {self.xmp_digital_source_type}")
        if self.generator_hint is not None:
            reasons.append(f"declared AI source: generator metadata names {self.generator_hint}")
        if self.c2pa_validation == C2PA_INVALID:
            reasons.append("invalid content credentials: " + ", ".join(self.c2pa_failures))
        return reasons


def read_provenance(data: bytes, image_format: str | None) -> Provenance:
    """Read every declared-provenance signal of an encoded image; never raises."""
    found: dict = {"errors": []}
    try:
        found.update(read_c2pa(data, image_format))
    except Exception as error:
        found["errors"].append(f"c2pa: {type(error).__name__}: {error}")
    try:
        found["xmp_digital_source_type"] = read_xmp_digital_source_type(data)
    except Exception as error:
        found["errors"].append(f"xmp: {error}")
    try:
        with warnings.catch_warnings(record=True) as caught:  # Pillow reads EXIF while opening a JPEG
            warnings.simplefilter("always")
            image = Image.open(io.BytesIO(data))
            image.getexif()
        opening_complaints = [str(w.message) for w in caught]
    except Exception as error:
        found["errors"].append(f"metadata: {type(error).__name__}: {error}")
        image = None
    if image is not None:
        texts = {}
        try:
            found.update(read_exif(image, opening_complaints))
            comment = found.pop("exif_user_comment", None)
            if comment:
                texts["UserComment"] = comment
        except Exception as error:
            found["errors"].append(f"exif: {type(error).__name__}: {error}")
        try:
            texts.update(text_chunks(image))
        except Exception as error:
            found["errors"].append(f"text chunks: {type(error).__name__}: {error}")
        hint, parameters = generator_from_texts(texts, found.get("exif_software"))
        found["generator_hint"], found["generation_parameters"] = hint, parameters
    declared = (found.get("c2pa_digital_source_type") in AI_SOURCE_TYPES
                or found.get("xmp_digital_source_type") in AI_SOURCE_TYPES
                or found.get("generator_hint") is not None)
    return Provenance(**found, declared_ai=declared)


def read_c2pa(data: bytes, image_format: str | None) -> dict:
    """The active C2PA manifest's generator, actions, source type and validation state; {} when there is none."""
    mime = C2PA_MIME_TYPES.get((image_format or "").upper())
    if mime is None or (b"c2pa" not in data and b"jumb" not in data):
        return {}
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except c2pa.C2paError.ManifestNotFound:
        return {}
    manifest = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    results = store.get("validation_results") or {}
    failures = [item.get("code") for item in (results.get("activeManifest") or {}).get("failure", [])]
    if not results:
        failures = [item.get("code") for item in store.get("validation_status") or []]
    failures = [code for code in failures if code]
    actions, source_types = [], []
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions", []):
                actions.append(str(action.get("action")))
                if action.get("digitalSourceType"):
                    source_types.append(short_source_type(action["digitalSourceType"]))
    ai_types = [t for t in source_types if t in AI_SOURCE_TYPES]
    return {
        "c2pa_present": True,
        "c2pa_validation": _validation_label(state, failures),
        "c2pa_failures": failures,
        "c2pa_claim_generator": _claim_generator(manifest),
        "c2pa_actions": actions,
        "c2pa_digital_source_type": (ai_types or source_types or [None])[0],
    }


def _validation_label(state: str | None, failures: list[str]) -> str:
    if any(code not in UNTRUSTED_CODES for code in failures) or (state or "").lower() == "invalid" and not failures:
        return C2PA_INVALID
    if failures:
        return C2PA_UNTRUSTED_SIGNER
    return C2PA_TRUSTED if (state or "").lower() == "trusted" else C2PA_VALID


def _claim_generator(manifest: dict) -> str | None:
    info = manifest.get("claim_generator_info") or []
    if info:
        first = info[0]
        return " ".join(str(part) for part in (first.get("name"), first.get("version")) if part)
    return manifest.get("claim_generator")


def short_source_type(value: str) -> str:
    """`http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia` -> `trainedAlgorithmicMedia`."""
    value = str(value).strip()
    return value.rsplit("/", 1)[-1] if value.startswith(("http://", "https://")) else value


def read_xmp_digital_source_type(data: bytes) -> str | None:
    """The IPTC digital source type from the file's XMP packet, if any."""
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        return None
    end = data.find(b"</x:xmpmeta>", start)
    if end < 0:
        raise ValueError("XMP packet is not closed")
    if end - start > MAX_XMP_BYTES:
        raise ValueError(f"XMP packet of {end - start} bytes exceeds the {MAX_XMP_BYTES}-byte limit; not parsed")
    packet = data[start:end].decode("utf-8", errors="replace")
    match = _XMP_SOURCE_TYPE.search(packet)
    if match is None:
        return None
    return short_source_type(next(group for group in match.groups() if group))


def read_exif(image: Image.Image, earlier_warnings: list[str] = ()) -> dict:
    """EXIF Software, Make, Model, and the user comment (where some web UIs put generation parameters)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exif = image.getexif()
        ifd = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}
    messages = [*earlier_warnings, *(str(w.message) for w in caught)]
    complaints = [message for message in messages if "exif" in message.lower()]
    if complaints:  # Pillow warns and returns what it could read: report it, keep the readable part
        raise ValueError("; ".join(complaints))
    found = {
        "exif_software": _clean(exif.get(EXIF_SOFTWARE)),
        "exif_make": _clean(exif.get(EXIF_MAKE)),
        "exif_model": _clean(exif.get(EXIF_MODEL)),
    }
    comment = ifd.get(EXIF_USER_COMMENT)
    found["exif_user_comment"] = _user_comment(comment)
    return found


def _user_comment(value) -> str | None:
    """EXIF UserComment: an 8-byte character-code header (ASCII, UNICODE, ...) then the text."""
    if value is None:
        return None
    if isinstance(value, str):
        return _clean(value)
    raw = bytes(value)
    header, body = raw[:8], raw[8:]
    if header.startswith(b"UNICODE"):
        encoding = "utf-16-be" if body[:1] == b"\x00" else "utf-16-le"
        return _clean(body.decode(encoding, errors="replace"))
    return _clean(body.decode("utf-8", errors="replace"))


def text_chunks(image: Image.Image) -> dict[str, str]:
    """PNG tEXt/iTXt/zTXt chunks and similar text keys the decoder exposes."""
    texts = dict(getattr(image, "text", {}) or {})
    for key, value in (image.info or {}).items():
        if isinstance(value, str) and key not in texts:
            texts[key] = value
    return {str(key): str(value) for key, value in texts.items()}


def generator_from_texts(texts: dict[str, str], software: str | None) -> tuple[str | None, str | None]:
    """Reduce generation metadata to a generator hint and its parameters text; (None, None) if none found."""
    lowered = {key.lower(): value for key, value in texts.items()}
    if "parameters" in lowered and _looks_like_a1111(lowered["parameters"]):
        return _with_model("Stable Diffusion web UI", _a1111_model(lowered["parameters"])), _truncate(lowered["parameters"])
    comment = lowered.get("usercomment")
    if comment and _looks_like_a1111(comment):
        return _with_model("Stable Diffusion web UI", _a1111_model(comment)), _truncate(comment)
    if "prompt" in lowered or "workflow" in lowered:
        workflow = lowered.get("prompt") or lowered.get("workflow")
        if _is_json_object(workflow):
            return _with_model("ComfyUI", _comfyui_checkpoint(workflow)), _truncate(workflow)
    for key in ("invokeai_metadata", "sd-metadata", "dream"):
        if key in lowered:
            return "InvokeAI", _truncate(lowered[key])
    names = " ".join(value for key, value in lowered.items() if key in ("software", "source")) + " " + (software or "")
    for needle, hint in GENERATOR_SOFTWARE:
        if needle in names.lower():
            details = lowered.get("comment") or lowered.get("description")
            return hint, _truncate(details) if details else None
    return None, None


def _looks_like_a1111(text: str) -> bool:
    return "Steps:" in text and ("Sampler:" in text or "CFG scale:" in text or "Seed:" in text)


def _a1111_model(text: str) -> str | None:
    match = _A1111_MODEL.search(text)
    return match.group(1).strip() if match else None


def _comfyui_checkpoint(text: str) -> str | None:
    try:
        graph = json.loads(text)
    except ValueError:
        return None
    nodes = graph.values() if isinstance(graph, dict) and "nodes" not in graph else graph.get("nodes", [])
    for node in nodes:
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs")
        if isinstance(inputs, dict) and isinstance(inputs.get("ckpt_name"), str):
            return inputs["ckpt_name"]
        values = node.get("widgets_values")
        if "Checkpoint" in str(node.get("type", "")) and isinstance(values, list) and values and isinstance(values[0], str):
            return values[0]
    return None


def _is_json_object(text: str | None) -> bool:
    try:
        return isinstance(json.loads(text or ""), dict)
    except ValueError:
        return False


def _with_model(generator: str, model: str | None) -> str:
    return f"{generator} (model {model})" if model else generator


def _truncate(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_PARAMETERS_CHARS else text[:MAX_PARAMETERS_CHARS] + "…"


def _clean(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).replace("\x00", "").strip()
    return text or None
