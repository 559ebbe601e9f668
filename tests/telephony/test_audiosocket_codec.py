"""AudioSocket codec against the bytes a real Asterisk 22.10.1 sent."""

from __future__ import annotations

import uuid

import pytest

from gateway.telephony import audiosocket as asock
from tests.telephony import fixtures


def parse_all(data: bytes, step: int | None = None, **kw) -> list:
    parser = asock.AudioSocketParser(**kw)
    out: list = []
    if step is None:
        out += parser.receive_data(data)
    else:
        for i in range(0, len(data), step):
            out += parser.receive_data(data[i:i + step])
    parser.receive_eof()
    return out


@pytest.mark.parametrize("step", [None, 1, 7, 320, 4096])
def test_as_a_stream_parses_to_uuid_and_exact_audio(step):
    data = fixtures.raw_path("audiosocket/as_a_app_hello_world.from_asterisk.bin").read_bytes()
    msgs = parse_all(data, step)
    assert isinstance(msgs[0], asock.Uuid)
    audio = [m for m in msgs[1:] if isinstance(m, asock.Audio)]
    assert len(audio) == 71 == len(msgs) - 1
    assert all(m.sample_rate == 8000 for m in audio)
    assert [len(m.pcm) for m in audio[:70]] == [320] * 70 and len(audio[70].pcm) == 24
    assert sum(len(m.pcm) for m in audio) == 22424
    # The payloads are the bytes between the headers, nothing else.
    assert b"".join(m.pcm for m in audio) == b"".join(
        data[i + 3:i + 3 + 320] for i in range(19, len(data), 323))


@pytest.mark.parametrize("name", [
    "as_a_app_hello_world", "as_b_dial_chan_hello_world", "as_b2_originate_audiosocket_channel",
    "as_b3_originate_audiosocket_channel_slin16", "as_c1_dtmf_sip_rfc4733_app",
    "as_c2_dtmf_sip_rfc4733_dial", "as_d_server_sends_tone_app", "as_e1_server_sends_hangup_app",
    "as_f1_idle_timeout_app", "as_g_sip_caller_app_server_sends_tone",
])
def test_every_capture_matches_the_recorders_annotations(name):
    chunks = fixtures.load(f"audiosocket/{name}")
    parser = asock.AudioSocketParser()
    for chunk in chunks:
        if not chunk.from_asterisk or not chunk.data:
            continue
        msgs = parser.receive_data(chunk.data)
        expected = chunk.meta.get("msgs", [])
        assert len(msgs) == len(expected)
        for got, want in zip(msgs, expected):
            kind = int(want["kind"], 16)
            if kind == asock.Kind.UUID:
                assert isinstance(got, asock.Uuid) and str(got.uuid) == want["uuid"]
            elif kind == asock.Kind.DTMF:
                assert isinstance(got, asock.Dtmf) and got.digit == want["digit"]
            else:
                assert isinstance(got, asock.Audio)
                assert got.sample_rate == asock.AUDIO_KIND_RATES[kind] and len(got.pcm) == want["len"]
    parser.receive_eof()


def test_slin16_capture_is_16k_with_640_byte_frames():
    chunks = fixtures.load("audiosocket/as_b3_originate_audiosocket_channel_slin16")
    msgs = parse_all(fixtures.stream(chunks))
    audio = [m for m in msgs if isinstance(m, asock.Audio)]
    assert {m.sample_rate for m in audio} == {16000}
    assert len(audio[0].pcm) == 640


def test_dtmf_capture_digits_in_order():
    chunks = fixtures.load("audiosocket/as_c1_dtmf_sip_rfc4733_app")
    msgs = parse_all(fixtures.stream(chunks), 5)
    assert [m.digit for m in msgs if isinstance(m, asock.Dtmf)] == list("123#*0")


def test_server_messages_are_the_bytes_asterisk_accepted():
    tone = fixtures.load("audiosocket/as_d_server_sends_tone_app")
    sent = [c.data for c in tone if not c.from_asterisk and c.data]
    assert len(sent) == 50
    for frame in sent:
        assert asock.encode_audio(frame[3:], 8000) == frame
    hangup = [c.data for c in fixtures.load("audiosocket/as_e1_server_sends_hangup_app")
              if not c.from_asterisk and c.data]
    assert hangup == [asock.encode_hangup()] == [b"\x00\x00\x00"]
    error = [c.data for c in fixtures.load("audiosocket/as_e2_server_sends_error_app")
             if not c.from_asterisk and c.data]
    assert error == [asock.encode_error(b"\x01")]
    dtmf = [c.data for c in fixtures.load("audiosocket/as_e3_server_sends_dtmf_kind_app")
            if not c.from_asterisk and c.data]
    assert dtmf == [asock.encode_dtmf("5")]


def test_encode_roundtrip_all_rates():
    call = uuid.uuid4()
    data = asock.encode_uuid(call)
    for rate in (8000, 12000, 16000, 24000, 32000, 44100, 48000):
        data += asock.encode_audio(b"\x01\x00" * 10, rate)
    data += asock.encode_dtmf("#") + asock.encode_hangup()
    msgs = parse_all(data)
    assert msgs[0] == asock.Uuid(call)
    assert [m.sample_rate for m in msgs[1:8]] == [8000, 12000, 16000, 24000, 32000, 44100, 48000]
    assert msgs[8] == asock.Dtmf("#") and msgs[9] == asock.Hangup()
    assert asock.audio_kind(16000) == 0x12


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x10" + bytes(16) + b"\x10\xff\xff", "exceeds the limit"),
    (b"\x01\x00\x10" + bytes(16) + b"\x42\x00\x00", "unknown message kind 0x42"),
    (b"\x10\x01\x40" + bytes(320), "first message must be the UUID"),
    (b"\x01\x00\x04abcd", "UUID message must carry 16 bytes"),
    (b"\x01\x00\x10" + bytes(16) + b"\x01\x00\x10" + bytes(16), "second UUID"),
    (b"\x01\x00\x10" + bytes(16) + b"\x10\x00\x00", "zero-length audio"),
    (b"\x01\x00\x10" + bytes(16) + b"\x03\x00\x01x", "invalid digit"),
    (b"GET / HTTP/1.1\r\n", "unknown message kind 0x47"),
])
def test_bad_input_is_a_protocol_error_and_the_parser_stays_failed(data, message):
    parser = asock.AudioSocketParser(4096)
    with pytest.raises(asock.ProtocolError, match=message):
        parser.receive_data(data)
    assert parser.state is asock.State.ERROR
    with pytest.raises(asock.ProtocolError, match="already failed"):
        parser.receive_data(asock.encode_audio(bytes(320)))


def test_oversize_length_is_refused_before_the_payload_arrives():
    parser = asock.AudioSocketParser(640)
    parser.receive_data(asock.encode_uuid(uuid.uuid4()))
    with pytest.raises(asock.ProtocolError, match="641 bytes"):
        parser.receive_data(b"\x10\x02\x81")
    assert parser.buffered == 0


def test_truncated_frame_at_eof():
    parser = asock.AudioSocketParser()
    parser.receive_data(asock.encode_uuid(uuid.uuid4()) + asock.encode_audio(bytes(320))[:100])
    assert parser.buffered == 100
    with pytest.raises(asock.ProtocolError, match="truncated message.*announced 320"):
        parser.receive_eof()
    assert parser.state is asock.State.ERROR
