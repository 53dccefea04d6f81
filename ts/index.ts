/**
 * sandboxd: drive Docker Sandboxes from Node.js and TypeScript. The public API; everything here is a thin
 * typed layer over the Rust core in the private native module.
 */
export { type CallOptions } from './call'
export { ErrorCodes, SandboxdError, isSandboxdError, type SandboxdErrorCode, type SandboxdErrorProps } from './errors'
export { ExecResult, type ExecResultInit, type ExecResultJson } from './result'
export { AsyncStream } from './stream'
export {
  ExecProcess,
  Forward,
  type ForwardOptions,
  type ExecOptions,
  type ExitStatus,
  type LineStream,
  type OutputChunk,
  type OutputLine,
  type ReadResult,
  type StreamName,
  type TtySize,
  type WriteFileOptions,
} from './exec'
export {
  Files,
  type DirTransfer,
  type FileEntry,
  type FileToWrite,
  type FilesReadOptions,
  type FilesWriteOptions,
  type MkdirOptions,
  type RemoveFileOptions,
  type RenameOptions,
} from './files'
export {
  Sandbox,
  Sandboxes,
  type AdditionalWorkspace,
  type BackendKind,
  type CreateSandboxOptions,
  type RemoveSandboxOptions,
  type SandboxInfo,
  type SandboxesOptions,
} from './sandboxes'
export {
  ArchiveStream,
  ArchiveUpload,
  Container,
  Containers,
  DockerEngine,
  Images,
  type ConnectEngineOptions,
  type ContainerInfo,
  type ContainerSummary,
  type CopyImageOptions,
  type CopyReport,
  type EngineVersion,
  type ImageInfo,
  type ImageSummary,
  type ListContainersOptions,
  type LogStream,
  type LogsOptions,
  type RemoveContainerOptions,
  type RunOptions,
  type StopContainerOptions,
} from './engine'
export {
  LocalSandboxd,
  Sandboxd,
  Vm,
  type CreateVmOptions,
  type LocalSandboxdOptions,
  type RemoveVmOptions,
  type SandboxdOptions,
  type VmInfo,
  type VmJson,
} from './sandboxd'
export {
  AcpClient,
  AgentSession,
  SandboxAgent,
  type AcpEventStream,
  type AcpRequestOptions,
  type AcpStreamEvent,
  type AgentEvent,
  type AgentListing,
  type ConnectAgentOptions,
  type CreateSessionOptions,
  type EnsureServerOptions,
  type EnsureServerResult,
  type InstallResult,
  type SandboxAgentOptions,
  type EventsOptions,
  type PermissionOption,
  type PromptOptions,
  type SendResult,
  type StopReason,
  type ToolCallFields,
  type TurnStream,
} from './agent'
export {
  doctor,
  type DoctorCandidate,
  type DoctorChoice,
  type DoctorDaemon,
  type DoctorGateVerdict,
  type DoctorJsonAnswer,
  type DoctorLegacyProbe,
  type DoctorOptions,
  type DoctorOutcome,
  type DoctorReport,
  type DoctorRoute,
  type DoctorRouteVerdict,
} from './doctor'
