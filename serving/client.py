"""`ForecastClient`: what applications call for a building's day-ahead forecast from TF Serving.

It builds the model window exactly as training does (`ml.windows.window_for_origin`), sends one Predict by
version label over gRPC with a deadline, retries UNAVAILABLE and DEADLINE_EXCEEDED with backoff, and when
the server or the input cannot give a model forecast it answers with the seasonal-naive forecast, flagged
`is_fallback=True` with the reason. Works against `wattflow serve` and the official TF Serving image alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WINDOW_SPEC_SIGNATURE, WindowSpec, features_from_input_names
from serving.fallback import NoFallbackPossible, seasonal_naive
from wattflow.log import get_logger

if TYPE_CHECKING:
    from wattflow.settings import Settings

log = get_logger(__name__)

FORECAST_COLUMNS = ("building_id", "ts", "yhat", "p10", "p50", "p90", "model_version", "is_fallback", "fallback_reason")


class ServingUnavailable(RuntimeError):
    """The server did not give a forecast; `code` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class VersionLoadFailed(RuntimeError):
    """The server tried to load the version and gave up; the message is the server's."""


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: str
    error_message: str


@dataclass(frozen=True)
class TLSOptions:
    """TLS towards a server started with `--ssl_config_file` (PEM bytes).

    `root_certificates`: the CA that signed the server's certificate (None: the system's roots);
    `certificate_chain` + `private_key`: this client's certificate, required when the server has client_verify;
    `server_name`: the name on the server's certificate when it differs from the target's host.
    """

    enabled: bool = False
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str = ""

    @classmethod
    def from_settings(cls, settings: "Settings") -> "TLSOptions":
        serving = settings.serving
        if not (serving.tls_ca_file or serving.tls_cert_file or serving.tls_key_file):
            return cls()
        if bool(serving.tls_cert_file) != bool(serving.tls_key_file):
            raise ValueError(
                "serving.tls_cert_file and serving.tls_key_file go together (WATTFLOW_SERVING__TLS_CERT_FILE / "
                f"__TLS_KEY_FILE): got cert={serving.tls_cert_file!r}, key={serving.tls_key_file!r}"
            )

        def read(path: str) -> bytes | None:
            if not path:
                return None
            try:
                return open(path, "rb").read()
            except OSError as exc:
                raise ValueError(f"cannot read the serving TLS file {path}: {exc}") from exc

        return cls(True, read(serving.tls_ca_file), read(serving.tls_cert_file), read(serving.tls_key_file),
                   serving.tls_server_name)

    def credentials(self):
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates, private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


class ForecastClient:
    def __init__(self, target: str, *, model_name: str | None = None, version_label: str | None = "stable",
                 deadline_s: float | None = None, retries: int | None = None, spec: WindowSpec | None = None,
                 settings: "Settings | None" = None, tls: "TLSOptions | None" = None) -> None:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from wattflow.settings import get_settings

        settings = settings or get_settings()
        self.target = target
        self.model_name = model_name or settings.model.model_name
        self.version_label = version_label or ""
        self.deadline_s = deadline_s if deadline_s is not None else settings.serving.deadline_s
        self.retries = max(1, retries if retries is not None else settings.serving.retries)
        self.retry_backoff_s = settings.serving.retry_backoff_s
        self._spec = spec
        self._default_spec = WindowSpec(
            lookback_h=settings.model.lookback_h, horizon_h=settings.model.horizon_h,
            quantiles=tuple(settings.model.quantiles),
        )
        limit = settings.serving.max_request_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        tls = tls if tls is not None else TLSOptions.from_settings(settings)
        if tls.enabled:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(target, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ForecastClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- the window contract ------------------------------------------------------------------------
    def spec(self) -> WindowSpec:
        """The window shape the served model takes (read once from its metadata), feature names from ml.spec."""
        if self._spec is None:
            try:
                self._spec = self._spec_from_metadata()
            except ServingUnavailable as exc:
                log.warning("model metadata unavailable; using the window spec from settings", error=str(exc))
                return self._default_spec
        return self._spec

    def _spec_from_metadata(self) -> WindowSpec:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec)
        response = self._call(self._predict.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        lookback = signature.inputs[INPUT_HISTORY].tensor_shape.dim[1].size
        horizon = signature.inputs[INPUT_FUTURE].tensor_shape.dim[1].size
        outputs = sorted(signature.outputs)
        quantiles = tuple(sorted(int(name[1:]) / 100 for name in outputs if name[1:].isdigit()))
        spec = replace(self._default_spec, lookback_h=lookback, horizon_h=horizon,
                       quantiles=quantiles or self._default_spec.quantiles)
        # Models exported with their feature columns spelled out (features follow what a building has).
        if WINDOW_SPEC_SIGNATURE in signatures.signature_def:
            history, future = features_from_input_names(list(signatures.signature_def[WINDOW_SPEC_SIGNATURE].inputs))
            if history and future:
                spec = replace(spec, history_features=history, future_features=future)
        return spec

    def _fill_spec(self, model_spec, version: int | None = None) -> None:
        model_spec.name = self.model_name
        if version is not None:
            model_spec.version.value = version
        elif self.version_label:
            model_spec.version_label = self.version_label

    # ---- calls with deadline and retries --------------------------------------------------------------
    def _call(self, method, request):
        import grpc
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, grpc.RpcError) and exc.code() in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
            )

        try:
            for attempt in Retrying(
                retry=retry_if_exception(retryable), stop=stop_after_attempt(self.retries),
                wait=wait_exponential(multiplier=self.retry_backoff_s, max=5 * self.retry_backoff_s + 1), reraise=True,
            ):
                with attempt:
                    return method(request, timeout=self.deadline_s)
        except grpc.RpcError as exc:
            raise ServingUnavailable(exc.code().name, exc.details() or "") from exc

    def predict(self, history: np.ndarray, future: np.ndarray, *, version: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        """Raw Predict on model windows: (outputs by name, the version that answered)."""
        from tensorflow_serving.apis import predict_pb2

        from serving.server.tensors import ndarray_to_proto, proto_to_ndarray

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, version)
        request.inputs[INPUT_HISTORY].CopyFrom(ndarray_to_proto(np.asarray(history, dtype=np.float32)))
        request.inputs[INPUT_FUTURE].CopyFrom(ndarray_to_proto(np.asarray(future, dtype=np.float32)))
        response = self._call(self._predict.Predict, request)
        outputs = {name: proto_to_ndarray(tensor, name) for name, tensor in response.outputs.items()}
        return outputs, int(response.model_spec.version.value)

    # ---- the application call ---------------------------------------------------------------------
    def forecast(self, building_id: str, history: pd.DataFrame, weather_forecast: pd.DataFrame,
                 origin: pd.Timestamp | str | None = None) -> pd.DataFrame:
        """Hourly forecast from `origin` (default: the first weather-forecast hour) over the model horizon.

        `history`: gold-feature rows of the building before the origin (history features and energy_kwh);
        `weather_forecast`: rows for the forecast hours with the future features (forecast weather, calendar).
        """
        return forecast_frame(building_id, history, weather_forecast, origin, self.spec(), self.predict)

    # ---- status, for the deploy DAG -----------------------------------------------------------------
    def status(self, version: int | None = None) -> list[VersionStatus]:
        from tensorflow_serving.apis import get_model_status_pb2

        from tensorflow.core.protobuf import error_codes_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = version
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionStatus(
                version=int(item.version), state=state_name(item.state),
                error_code=error_codes_pb2.Code.Name(item.status.error_code), error_message=item.status.error_message,
            )
            for item in response.model_version_status
        ]

    def wait_until_available(self, version: int, timeout_s: float, poll_s: float = 0.25) -> VersionStatus:
        """Block until the server reports `version` AVAILABLE; VersionLoadFailed if it gave up, TimeoutError if slow."""
        deadline = time.monotonic() + timeout_s
        last = "not known to the server"
        while True:
            try:
                statuses = self.status(version)
            except ServingUnavailable as exc:
                statuses, last = [], str(exc)
            for item in statuses:
                if item.state == "AVAILABLE":
                    return item
                if item.state == "END" and item.error_code != "OK":
                    raise VersionLoadFailed(f"version {version} of {self.model_name}: {item.error_code}: {item.error_message}")
                last = item.state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"version {version} of {self.model_name} not AVAILABLE after {timeout_s}s ({last})")
            time.sleep(poll_s)


def forecast_frame(building_id: str, history: pd.DataFrame, weather_forecast: pd.DataFrame, origin,
                   spec: WindowSpec, predict) -> pd.DataFrame:
    """One building's forecast from `origin` through any `predict(history, future) -> (outputs, version)`:
    TF Serving over gRPC (`ForecastClient`) or a SavedModel in this process (batch scoring,
    serving/batch_scoring.py). Input or server trouble answers with the seasonal-naive fallback."""
    from ml.windows import WindowError, window_for_origin

    origin_ts = _origin(history, weather_forecast, origin)
    hours = pd.date_range(origin_ts, periods=spec.horizon_h, freq="h")
    frame = pd.concat([_rows(history, building_id), _rows(weather_forecast, building_id)], ignore_index=True)
    frame = frame.drop_duplicates(subset="ts", keep="last")
    try:
        window_history, window_future = window_for_origin(frame, origin_ts, spec)
        outputs, version = predict(window_history, window_future)
    except (WindowError, KeyError, ValueError) as exc:
        return _fallback(building_id, history, hours, spec, f"input: {exc}")
    except ServingUnavailable as exc:
        return _fallback(building_id, history, hours, spec, f"server: {exc}")
    median = outputs.get("p50")
    if median is None:
        return _fallback(building_id, history, hours, spec, f"server returned no p50 (outputs {sorted(outputs)})")
    result = pd.DataFrame({"building_id": building_id, "ts": hours, "yhat": median[0].astype(float)})
    for name in ("p10", "p50", "p90"):
        result[name] = outputs[name][0].astype(float) if name in outputs else np.nan
    result["model_version"] = pd.array([version] * len(result), dtype="Int64")
    result["is_fallback"] = False
    result["fallback_reason"] = ""
    return result[list(FORECAST_COLUMNS)]


def _fallback(building_id: str, history: pd.DataFrame, hours: pd.DatetimeIndex, spec: WindowSpec, reason: str) -> pd.DataFrame:
    log.warning("serving seasonal-naive fallback", building_id=building_id, reason=reason)
    try:
        values = seasonal_naive(_rows(history, building_id), hours, target=spec.target)
    except NoFallbackPossible as exc:
        raise ServingUnavailable("FALLBACK_IMPOSSIBLE", f"{reason}; and no seasonal-naive forecast: {exc}") from exc
    return pd.DataFrame({
        "building_id": building_id, "ts": hours, "yhat": values, "p10": values, "p50": values, "p90": values,
        "model_version": pd.array([pd.NA] * len(hours), dtype="Int64"), "is_fallback": True,
        "fallback_reason": reason,
    })[list(FORECAST_COLUMNS)]


def _rows(frame: pd.DataFrame, building_id: str) -> pd.DataFrame:
    if "building_id" in frame:
        frame = frame[frame["building_id"].astype(str) == str(building_id)]
    frame = frame.assign(building_id=building_id)
    return frame.assign(ts=pd.to_datetime(frame["ts"], utc=True))


def _origin(history: pd.DataFrame, weather_forecast: pd.DataFrame, origin) -> pd.Timestamp:
    if origin is not None:
        ts = pd.Timestamp(origin)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if len(weather_forecast):
        return pd.to_datetime(weather_forecast["ts"], utc=True).min()
    return pd.to_datetime(history["ts"], utc=True).max() + pd.Timedelta(hours=1)
