; Interrupt delivery through the in-kernel irqchip: the in-kernel 8254 PIT (KVM_CREATE_PIT2) on
; IRQ0, through the in-kernel 8259 (remapped to vectors 0x20-0x27), through LAPIC LINT0 (ExtINT),
; to our IDT handler. The handler counts ticks at DATA and sends EOI; the main loop sleeps in HLT
; (handled inside KVM: no exit) until 3 ticks, then reports the count on port 0xf6 and stops (0xf5).
%include "long_mode_entry.inc"
main64:
  mov edi, 0x20
  mov rsi, irq0
  xor edx, edx
  call set_gate
  call load_idt
  ; 8259 master: ICW1 (edge, cascade, ICW4), ICW2 base 0x20, ICW3 slave on IR2, ICW4 8086 mode
  mov al, 0x11
  out 0x20, al
  mov al, 0x20
  out 0x21, al
  mov al, 0x04
  out 0x21, al
  mov al, 0x01
  out 0x21, al
  mov al, 0xfe              ; unmask IRQ0 only
  out 0x21, al
  mov al, 0xff
  out 0xa1, al              ; slave all masked
  ; 8254 channel 0, lobyte/hibyte, mode 2 (rate generator), divisor 11932 (~100 Hz)
  mov al, 0x34
  out 0x43, al
  mov ax, 11932
  out 0x40, al
  mov al, ah
  out 0x40, al
  mov dword [DATA], 0
  sti
.wait:
  hlt
  cmp dword [DATA], 3
  jb .wait
  cli
  mov eax, [DATA]
  out 0xf6, eax
  xor eax, eax
  out 0xf5, al
  hlt

irq0:
  push rax
  inc dword [DATA]
  mov al, 0x20              ; non-specific EOI
  out 0x20, al
  pop rax
  iretq
