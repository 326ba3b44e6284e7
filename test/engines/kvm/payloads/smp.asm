; Secondary CPU start-up: the boot CPU sends INIT and SIPI (vector 0x08: start at 0x8000 in real
; mode) through its local APIC's ICR (in-kernel LAPIC at 0xfee00000, Intel SDM vol. 3, 8.4.4.1),
; and waits for every other CPU to check in. Each secondary CPU reports its APIC id on port 0xf7
; from real mode, increments the check-in counter with LOCK XADD, and halts.
; Boot CPU then writes the count to port 0xf6 and stops (0xf5). The CPU count is at DATA+8 (set by
; the test before the run).
%include "long_mode_entry.inc"
APIC    equ 0xfee00000
ICR_LO  equ 0x300
ICR_HI  equ 0x310
main64:
  ; copy the real-mode trampoline to 0x8000
  mov rsi, trampoline
  mov rdi, 0x8000
  mov rcx, trampoline_end - trampoline
  rep movsb
  mov dword [DATA], 0
  mov rbx, APIC
  ; software-enable our APIC (SVR bit 8) so the ICR works
  mov eax, [rbx + 0xf0]
  or eax, 0x1ff
  mov [rbx + 0xf0], eax
  ; INIT IPI, all excluding self (shorthand 11b, level assert, delivery mode 101b)
  mov dword [rbx + ICR_HI], 0
  mov dword [rbx + ICR_LO], 0x000c4500
  ; (real hardware wants 10 ms here; KVM's LAPIC does not)
  ; SIPI, all excluding self, vector 0x08 (start at 0x8000), sent twice as the MP spec says
  mov dword [rbx + ICR_LO], 0x000c4608
  mov dword [rbx + ICR_LO], 0x000c4608
  mov ecx, [DATA + 8]
  dec ecx
  mov r8, 200000000
.wait:
  cmp [DATA], ecx
  jae .done
  pause
  dec r8
  jnz .wait
.done:
  mov eax, [DATA]
  out 0xf6, eax
  xor eax, eax
  out 0xf5, al
  hlt

bits 16
trampoline:
  ; runs at 0x8000 with CS = 0x0800, IP = 0
  cli
  mov ax, DATA >> 4
  mov ds, ax                ; DATA is above 64 KiB: reach it through DS
  mov eax, 1                ; our APIC id: CPUID leaf 1 EBX[31:24] (the APIC page is above 1 MiB)
  cpuid
  shr ebx, 24
  mov eax, ebx
  out 0xf7, al
  mov eax, 1
  lock xadd [0], eax
.halt:
  hlt
  jmp .halt
trampoline_end:
